"""Point clouds and their camera: projection, and how 2D image ops and 3D cloud transforms change them.

Conventions (the sample's ``points``, ``intrinsics`` and ``extrinsics``):

- ``points`` (N, 3) float32 are world coordinates; ``extrinsics`` (3, 4) float64 is ``[R | t]``, so a
  point's camera coordinates are ``X_c = R @ P + t`` (x right, y down, z forward);
- ``intrinsics`` (3, 3) float64 maps camera coordinates to *continuous* pixel coordinates (the boxes'
  and keypoints' convention: pixel (i, j) covers [j, j+1) x [i, i+1)): ``(u, v, 1) ~ K @ X_c``.
  It starts as a pinhole matrix; after a rotation or shear of the image it is that 2D affine times the
  pinhole matrix (still last row (0, 0, 1)), which every projection formula accepts.

How the modalities stay aligned -- the identity ``project(cloud', camera') == A(project(cloud, camera))``
for the 2D map ``A`` the image went through:

- a 2D image op with continuous-pixel matrix ``A`` (crop, resize, rotation, translation, shear):
  ``K' = A @ K``; cloud and extrinsics unchanged;
- a horizontal flip mirrors the point cloud, as the synchronized-augmentation article's table asks
  ("mirror point cloud along vertical axis"): the cloud is reflected in the camera's vertical plane
  (``X_c -> S X_c``, ``S = diag(-1, 1, 1)``; in world coordinates ``P -> R^T S R P + R^T (S - I) t``),
  the extrinsics stay, and the principal point is mirrored too (``c_x -> W - c_x``, skew negated), so
  ``K`` stays a proper (non-mirroring) camera. With a centred principal point ``K`` does not change at
  all: the mirror lives in the cloud, where a 3D model sees it, not in the camera;
- a 3D similarity of the cloud ``P -> s Q P + d`` (rotation, scaling, translation): the camera moves with
  the cloud (``R' = R Q^T``, ``t' = s t - R' d``), so camera coordinates only scale by ``s`` and every
  point lands on the same pixel; the image is unchanged. A 3D mirror is a flip of the image (above)
  followed by such a similarity.
"""

from __future__ import annotations

import torch

S_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))


def project(points: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    """Continuous pixel coordinates (N, 2) float64 and depths (N,) of world points through a camera."""
    p = points.double()
    cam = p @ extrinsics[:, :3].double().T + extrinsics[:, 3].double()
    uvw = cam @ intrinsics.double().T
    return uvw[:, :2] / uvw[:, 2:3], cam[:, 2]


def continuous(m_index: torch.Tensor) -> torch.Tensor:
    """A 3x3 pixel-index matrix (kornia's: pixel centres at integers) in continuous pixel coordinates."""
    shift = torch.eye(3, dtype=torch.float64, device=m_index.device)
    shift[:2, 2] = 0.5
    back = torch.eye(3, dtype=torch.float64, device=m_index.device)
    back[:2, 2] = -0.5
    return shift @ m_index.double() @ back


def hflip_index(width: int) -> torch.Tensor:
    """The horizontal flip of an image ``width`` pixels wide, as a pixel-index matrix."""
    m = torch.eye(3, dtype=torch.float64)
    m[0, 0], m[0, 2] = -1.0, width - 1.0
    return m


def camera_mirror(extrinsics: torch.Tensor) -> torch.Tensor:
    """4x4 world transform reflecting the world in the camera's vertical plane (``X_c -> S X_c``)."""
    r, t = extrinsics[:, :3].double(), extrinsics[:, 3].double()
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = r.T @ S_MIRROR @ r
    out[:3, 3] = r.T @ (S_MIRROR - torch.eye(3, dtype=torch.float64)) @ t
    return out


def transform_points(points: torch.Tensor, world: torch.Tensor) -> torch.Tensor:
    """Points (N, 3) through a 4x4 world transform, computed in float64 and stored as float32."""
    return (points.double() @ world[:3, :3].T + world[:3, 3]).to(points.dtype)


def after_warp(intrinsics: torch.Tensor, extrinsics: torch.Tensor, m_index: torch.Tensor,
               in_width: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The intrinsics after a 2D warp (pixel-index matrix ``m_index``) and, when the warp mirrors, the
    4x4 world transform the cloud must go through (else None); see the module docstring."""
    a = continuous(m_index.detach().cpu())
    k = intrinsics.double()
    if float(torch.linalg.det(a[:2, :2])) >= 0:
        return a @ k, None
    flip = continuous(hflip_index(in_width))
    k_mirrored = flip @ k @ S_MIRROR  # c_x -> W - c_x, skew negated: F K = K_m S
    return (a @ flip) @ k_mirrored, camera_mirror(extrinsics)


def similarity(scale: float, rotation: torch.Tensor, translation: torch.Tensor, mirror: bool = False) -> torch.Tensor:
    """4x4 world transform ``P -> scale * Q (M) P + d``, ``M`` the mirror ``x -> -x`` when ``mirror``."""
    out = torch.eye(4, dtype=torch.float64)
    lin = scale * rotation.double()
    if mirror:
        lin = lin @ S_MIRROR
    out[:3, :3] = lin
    out[:3, 3] = translation.double()
    return out


def follow(extrinsics: torch.Tensor, world: torch.Tensor) -> torch.Tensor:
    """Extrinsics of the camera moved with a proper similarity ``world`` of the cloud (``X_c' = s X_c``)."""
    lin = world[:3, :3]
    det = float(torch.linalg.det(lin))
    if det <= 0:
        raise ValueError("a camera can follow only a proper (non-mirroring) similarity; mirror through the image")
    s = det ** (1.0 / 3.0)
    q = lin / s
    r, t = extrinsics[:, :3].double(), extrinsics[:, 3].double()
    r_new = r @ q.T
    return torch.cat([r_new, (s * t - r_new @ world[:3, 3])[:, None]], 1)


def rotation_matrix(axis: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotation by ``degrees`` about ``axis`` (Rodrigues), float64."""
    a = axis.double() / axis.double().norm()
    th = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    kx = torch.tensor([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + torch.sin(th) * kx + (1 - torch.cos(th)) * kx @ kx
