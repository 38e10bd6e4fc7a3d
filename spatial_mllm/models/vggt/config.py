"""`VGGTConfig`: the hyper-parameters of VGGT (Wang et al., CVPR 2025), defaults = the released VGGT-1B.

A `transformers.PreTrainedConfig` (a dataclass in transformers 5.x), so a SpatialMLLM config can nest it
as ``spatial_config`` and it serialises with ``to_dict()`` / ``from_dict()`` / ``to_json_string()``.
Every field carries its meaning in ``metadata["help"]``; ``VGGTConfig.field_help()`` returns them.
"""

from __future__ import annotations

from dataclasses import field, fields

from transformers import PreTrainedConfig

PATCH_EMBED_TYPES = ("dinov2_vitl14_reg", "conv")


class VGGTConfig(PreTrainedConfig):
    """Hyper-parameters of VGGT; the defaults rebuild ``facebook/VGGT-1B`` key for key (track head aside).

    The DINOv2 patch embed is as wide as the aggregator (``embed_dim``); its depth and heads are
    ``dino_depth`` / ``dino_num_heads`` (24 / 16 = ViT-L/14 for the checkpoint). Heads read
    ``2 * embed_dim`` channels (frame ⊕ global tokens).
    """

    model_type = "vggt"

    # ---- input / aggregator -------------------------------------------------------------------------
    img_size: int = field(default=518, metadata={"help": "side of the square grid the DINOv2 pos_embed was "
                                                 "trained on (pixels); 518 = 37 patches of 14"})
    patch_size: int = field(default=14, metadata={"help": "patch side in pixels; H and W must be multiples"})
    embed_dim: int = field(default=1024, metadata={"help": "token width C of the aggregator (and DINOv2)"})
    depth: int = field(default=24, metadata={"help": "number of frame blocks = number of global blocks"})
    num_heads: int = field(default=16, metadata={"help": "attention heads of the aggregator blocks (head_dim 64)"})
    mlp_ratio: float = field(default=4.0, metadata={"help": "MLP hidden width / embed_dim (aggregator, DINOv2, "
                                                    "camera trunk)"})
    num_register_tokens: int = field(default=4, metadata={"help": "register tokens per frame in the aggregator "
                                                          "(and in DINOv2); patch_start_idx = 1 + this"})
    patch_embed: str = field(default="dinov2_vitl14_reg", metadata={"help": "'dinov2_vitl14_reg' (DINOv2 "
                             "ViT with registers, the checkpoint) or 'conv' (a single 14x14 conv, no DINO)"})
    dino_depth: int = field(default=24, metadata={"help": "DINOv2 blocks (24 for ViT-L/14); not in upstream's "
                                                  "signature, exposed so tiny configs can shrink it"})
    dino_num_heads: int = field(default=16, metadata={"help": "DINOv2 attention heads (16 for ViT-L/14)"})
    qk_norm: bool = field(default=True, metadata={"help": "LayerNorm on per-head q and k in aggregator blocks"})
    rope_freq: float = field(default=100.0, metadata={"help": "2D RoPE base frequency; <= 0 disables RoPE"})
    init_values: float = field(default=0.01, metadata={"help": "LayerScale init of aggregator and camera-trunk "
                                                       "blocks (DINOv2 uses 1.0); checkpoint overrides it"})
    aa_order: list[str] = field(default_factory=lambda: ["frame", "global"], metadata={
        "help": "order of attention types inside one alternating-attention group"})
    aa_block_size: int = field(default=1, metadata={"help": "consecutive blocks of one type per group; "
                                                    "depth must be divisible by it"})
    # ---- camera head --------------------------------------------------------------------------------
    camera_trunk_depth: int = field(default=4, metadata={"help": "blocks of the camera-head trunk"})
    camera_num_heads: int = field(default=16, metadata={"help": "heads of the camera trunk (head_dim 128)"})
    camera_num_iterations: int = field(default=4, metadata={"help": "iterative refinement steps of the "
                                                            "camera head (4 in VGGT)"})
    # ---- DPT heads ----------------------------------------------------------------------------------
    dpt_features: int = field(default=256, metadata={"help": "fusion width of the DPT heads"})
    dpt_out_channels: list[int] = field(default_factory=lambda: [256, 512, 1024, 1024], metadata={
        "help": "channels of the four DPT projections (1x1 convs from 2*embed_dim)"})
    dpt_intermediate_layer_idx: list[int] = field(default_factory=lambda: [4, 11, 17, 23], metadata={
        "help": "aggregator layers read by the DPT heads (Python indices into the layer list)"})
    # ---- which heads exist --------------------------------------------------------------------------
    enable_camera: bool = field(default=True, metadata={"help": "build camera_head (pose_enc outputs)"})
    enable_depth: bool = field(default=True, metadata={"help": "build depth_head (depth, depth_conf)"})
    enable_point: bool = field(default=True, metadata={"help": "build point_head (world_points, *_conf)"})

    def __post_init__(self, **kwargs):
        # JSON round trips turn tuples into lists; keep lists so equality after from_dict holds.
        self.aa_order = list(self.aa_order)
        self.dpt_out_channels = [int(c) for c in self.dpt_out_channels]
        self.dpt_intermediate_layer_idx = [int(i) for i in self.dpt_intermediate_layer_idx]
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        """Reject combinations the modules cannot build, and say why."""
        if self.patch_embed not in PATCH_EMBED_TYPES:
            raise ValueError(f"patch_embed must be one of {PATCH_EMBED_TYPES}, got {self.patch_embed!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
        if self.rope_freq > 0 and (self.embed_dim // self.num_heads) % 4:
            raise ValueError("2D RoPE splits each head into a row half and a column half of rotated pairs: "
                             f"head_dim {self.embed_dim // self.num_heads} must be a multiple of 4")
        if self.patch_embed.startswith("dinov2") and self.embed_dim % self.dino_num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} not divisible by dino_num_heads {self.dino_num_heads}")
        if (2 * self.embed_dim) % self.camera_num_heads:
            raise ValueError(f"camera trunk width {2 * self.embed_dim} not divisible by camera_num_heads "
                             f"{self.camera_num_heads}")
        if self.depth % self.aa_block_size:
            raise ValueError(f"depth {self.depth} must be divisible by aa_block_size {self.aa_block_size}")
        if not self.aa_order or any(a not in ("frame", "global") for a in self.aa_order):
            raise ValueError(f"aa_order entries must be 'frame' or 'global', got {self.aa_order}")
        if len(self.dpt_out_channels) != 4 or len(self.dpt_intermediate_layer_idx) != 4:
            raise ValueError("the DPT heads fuse exactly four layers: dpt_out_channels and "
                             "dpt_intermediate_layer_idx need 4 entries each")
        if any(c % 4 for c in self.dpt_out_channels) or (self.dpt_features // 2) % 4:
            raise ValueError("DPT sin/cos positional embeddings need channel counts divisible by 4 "
                             "(dpt_out_channels and dpt_features // 2)")
        dpt_used = self.enable_depth or self.enable_point
        if dpt_used and any(not -self.depth <= i < self.depth for i in self.dpt_intermediate_layer_idx):
            raise ValueError(f"dpt_intermediate_layer_idx {self.dpt_intermediate_layer_idx} out of range for "
                             f"depth {self.depth}")

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token per frame: camera token + registers (5 for VGGT-1B)."""
        return 1 + self.num_register_tokens

    @property
    def head_dim_in(self) -> int:
        """Width of the aggregated tokens the heads read: frame ⊕ global = 2 * embed_dim."""
        return 2 * self.embed_dim

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """``{field name: help text}`` for the VGGT fields (not the transformers base fields)."""
        return {f.name: f.metadata["help"] for f in fields(cls) if "help" in f.metadata}

    @classmethod
    def tiny(cls, **overrides) -> VGGTConfig:
        """A ~1 M-parameter VGGT for CPU tests: 28 px pos-embed grid, 64-d, 4 layers, all heads enabled."""
        kwargs = dict(
            img_size=28, patch_size=14, embed_dim=64, depth=4, num_heads=4, dino_depth=2, dino_num_heads=4,
            camera_trunk_depth=1, camera_num_heads=4, dpt_features=16, dpt_out_channels=[8, 16, 32, 32],
        )
        kwargs.update(overrides)
        if "dpt_intermediate_layer_idx" not in kwargs:  # four layers spread over the depth, last one last
            d = kwargs["depth"]
            kwargs["dpt_intermediate_layer_idx"] = [round(i * (d - 1) / 3) for i in range(4)]
        return cls(**kwargs)
