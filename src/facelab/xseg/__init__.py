"""XSeg: label faces with masks, train the face segmenter, apply its masks to facesets (DeepFaceLab's XSeg)."""
