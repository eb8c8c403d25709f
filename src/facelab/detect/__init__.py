"""Face detectors, landmarkers and embedders behind small interfaces, so better backends plug in.

- a detector maps a BGR image to boxes with scores (:class:`Detection`);
- a landmarker maps an image and a box to 68 points (iBUG layout, as dlib and 2D-FAN);
- an embedder maps an image and its 68 points to an identity vector.
"""
