"""Motion data: the HumanML3D / KIT-ML representation, dataset folders, BVH files and pictures.

`representation` turns joints into features and back; `data` loads HumanML3D-layout folders and `dataset_writer`
writes them; `bvh` reads and writes BVH files, `retarget` maps a BVH skeleton onto the HumanML3D joints,
`bvh_export` writes HumanML3D motions as BVH, `bvh_dataset` builds a training folder from BVH files and `bvh_cli`
is `moscale bvh`; `render` draws motions.
"""
