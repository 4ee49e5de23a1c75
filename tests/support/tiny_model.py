"""The smallest model the train-unit tests build: a 1-block ViT on 8x16x16 volumes, rank-4 head."""

TINY_VIT = [
    "model.img_size=[8,16,16]",
    "model.patch_size=[4,8,8]",
    "model.embed_dim=16",
    "model.depth=1",
    "model.num_heads=2",
    "head.rank=4",
]
