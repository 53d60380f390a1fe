"""Motion data: the HumanML3D / KIT-ML representation, dataset folders, BVH files and pictures.

`representation` turns joints into features and back; `data` loads HumanML3D-layout folders; `bvh` reads and
writes BVH files; `render` draws motions.
"""
