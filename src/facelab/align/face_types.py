"""Face types as DeepFaceLab users know them, from the tight half face to the whole head.

A face type is the mean-face template (68-point layout, points 17..67, in a unit square spanning
eyebrows to lower lip) placed in the output square with a padding on every side, and for the larger
crops moved down so the forehead and hair fit above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACE_TYPES = ("half", "mid", "full", "whole", "head")
# DeepFaceLab's spellings: the short names its model settings take (h, mf, f, wf, head) and the names its
# extractor and face files use (half_face, midfull_face, full_face, whole_face), so a user's habits and scripts
# carry over; every config stores the name of FACE_TYPES (``option(..., value_aliases=FACE_TYPE_ALIASES)``).
FACE_TYPE_ALIASES = {"h": "half", "half_face": "half", "mf": "mid", "midfull_face": "mid", "f": "full",
                     "full_face": "full", "wf": "whole", "whole_face": "whole"}


def face_type_name(name: str) -> str:
    """The name in FACE_TYPES for any accepted spelling (an argparse ``type`` for plain ``--face-type`` flags)."""
    return FACE_TYPE_ALIASES.get(name, name)

# dlib's mean shape for landmarks 17..67 (eyebrows, nose, eyes, mouth), normalised to the unit square.
_MEAN_X = [
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
    0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
    0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
    0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
    0.42689,
]
_MEAN_Y = [
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
    0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326,
    0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423,
    0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182,
    0.831803, 0.824182,
]
MEAN_FACE = np.stack([_MEAN_X, _MEAN_Y], axis=1).astype(np.float64)  # (51, 2), landmarks 17..67
ALIGN_POINTS = slice(17, 68)


@dataclass(frozen=True)
class FaceType:
    name: str
    padding: float  # template units added on each side
    shift: float  # template units the face moves down (room for forehead / hair)

    def template(self, size: int) -> np.ndarray:
        """Pixel positions of landmarks 17..67 in an aligned ``size`` x ``size`` image."""
        scale = size / (1.0 + 2.0 * self.padding)
        offset = np.array([self.padding, self.padding + self.shift])
        return (MEAN_FACE + offset) * scale


_TYPES = {
    "half": FaceType("half", 0.0, 0.0),
    "mid": FaceType("mid", 0.0675, 0.0),
    "full": FaceType("full", 0.2109375, 0.0),
    "whole": FaceType("whole", 0.40, 0.10),
    "head": FaceType("head", 0.70, 0.22),
}


def face_type(name: str) -> FaceType:
    from facelab.core.errors import FacelabError

    try:
        return _TYPES[name]
    except KeyError:
        raise FacelabError(f"unknown face type {name!r}; use one of {', '.join(FACE_TYPES)}") from None
