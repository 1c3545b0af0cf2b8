"""Masked-autoencoder pretraining of the 3-D ViT (E3D-GPT's encoder recipe; He et al.'s MAE).

Each volume's patches are shuffled per sample; the encoder sees only the kept 25 % (with their position
embeddings), a light transformer decoder gets the encoded tokens plus a learned mask token at every hidden
position and predicts each patch's voxels; the loss is the mean squared error on the masked patches only, with
each target patch normalised to zero mean and unit variance (MAE's ``norm_pix_loss``).
"""

from __future__ import annotations

import torch
from torch import nn

from napari_radreport.modeling.configuration import ViT3DConfig
from napari_radreport.modeling.vit3d import PatchRearrange, ViT3DBlock, ViT3DEncoder


class MaskedAutoencoder3D(nn.Module):
    """A ``ViT3DEncoder`` (its weights go to the report model afterwards) and a small decoder."""

    def __init__(self, encoder_config: ViT3DConfig, decoder: dict, mask_ratio: float = 0.75):
        super().__init__()
        self.encoder = ViT3DEncoder(encoder_config)
        self.mask_ratio = mask_ratio
        width = int(decoder.get("hidden_size", 64))
        dec_config = ViT3DConfig(image_size=encoder_config.image_size, patch_size=encoder_config.patch_size,
                                 in_channels=encoder_config.in_channels, hidden_size=width,
                                 num_hidden_layers=int(decoder.get("num_hidden_layers", 2)),
                                 num_attention_heads=int(decoder.get("num_attention_heads", 4)),
                                 intermediate_size=4 * width, use_cls_token=False)
        self.decoder_embed = nn.Linear(encoder_config.hidden_size, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder_position = nn.Parameter(torch.zeros(1, encoder_config.num_patches, width))
        self.decoder_blocks = nn.ModuleList(ViT3DBlock(dec_config)
                                            for _ in range(dec_config.num_hidden_layers))
        self.decoder_norm = nn.LayerNorm(width)
        self.predict = nn.Linear(width, encoder_config.patch_dim)
        self.patchify = PatchRearrange(encoder_config.patch_size)
        for param in (self.mask_token, self.decoder_position,
                      self.encoder.patch_embedding.position_embeddings):
            nn.init.trunc_normal_(param, std=0.02)

    def random_keep(self, batch: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample indices of kept patches and the permutation that restores the original order."""
        keep = max(1, round(n * (1 - self.mask_ratio)))
        shuffle = torch.argsort(torch.rand(batch, n, device=device), dim=1)
        restore = torch.argsort(shuffle, dim=1)
        return shuffle[:, :keep], restore

    def encode_visible(self, pixel_values: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        tokens = enc.patch_embedding(pixel_values)  # position embeddings included
        tokens = torch.gather(tokens, 1, kept[..., None].expand(-1, -1, tokens.shape[-1]))
        if enc.cls_token is not None:
            tokens = torch.cat([enc.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for block in enc.blocks:
            tokens = block(tokens)
        tokens = enc.norm(tokens)
        return tokens[:, 1:] if enc.cls_token is not None else tokens

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The loss on the masked patches of (B, C, D, H, W) volumes."""
        target = self.patchify(pixel_values)
        batch, n, _ = target.shape
        kept, restore = self.random_keep(batch, n, pixel_values.device)
        visible = self.decoder_embed(self.encode_visible(pixel_values, kept))
        filler = self.mask_token.expand(batch, n - visible.shape[1], -1)
        tokens = torch.gather(torch.cat([visible, filler], dim=1), 1,
                              restore[..., None].expand(-1, -1, visible.shape[-1])) + self.decoder_position
        for block in self.decoder_blocks:
            tokens = block(tokens)
        prediction = self.predict(self.decoder_norm(tokens))
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
        masked = torch.ones(batch, n, device=pixel_values.device)
        masked.scatter_(1, kept, 0.0)
        per_patch = ((prediction.float() - target.float()) ** 2).mean(-1)
        return (per_patch * masked).sum() / masked.sum()
