"""Which autoencoder for the shipped microscopy base: does a phenotype survive encoding and decoding?

    python benchmarks/base_vae.py --work /tmp/base [--configs 4x4 4x16 4x16x3] [--steps 3000] [--init-from VAE]

A latent model can only translate what its VAE keeps: a phenotype blurred away by the VAE cannot be put back by the
diffusion model. Each configuration (side factor x latent channels) is trained as scripts/train_base.py trains the
shipped one (the same corpus, which holds no translocation images, random 64-px crops, L1 + 1e-6 KL, batch 8), for the
same number of steps; then 8 simulated fields per condition of each phenotype (seed 100+, 64 px, cell diameter 20 px)
are encoded and decoded, and the simulator's per-cell phenotype is measured on the originals and on the
reconstructions with the true masks. FACTORxCHANNELSx3 is a one-channel VAE that encodes each channel on its own
(three channel slots, core/models/latent_base.py); --init-from starts it from an RGB VAE (scripts/train_base.py
warm_start). Kept: the share of cells whose reconstruction is still closer to its own condition's real median than to
the other condition's; the medians show how far the VAE pulls the two conditions together. PSNR is over the normalised image ([-1, 1]), camera noise included (which no VAE should reproduce).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_base  # noqa: E402  (the recipe of the shipped base)

from napari_phendiff.core.images import Normalization  # noqa: E402
from napari_phendiff.core.simulate import PHENOTYPES, measure_phenotype, simulate_field  # noqa: E402

from report import hardware, table, write_section  # noqa: E402


def blurred(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """What an ideal autoencoder of the same spatial size could at worst keep: each channel averaged over factor x
    factor blocks and interpolated back (bilinear). A reference row, not a candidate."""
    small = torch.nn.functional.avg_pool2d(x, factor)
    return torch.nn.functional.interpolate(small, scale_factor=factor, mode="bilinear", align_corners=False)


def preserved(vae_folder: Path | None, phenotype: str) -> dict:
    """Encode and decode simulated fields of `phenotype` with the VAE in `vae_folder` (None: the 4x blur) and measure
    how much of the phenotype is left."""
    from diffusers import AutoencoderKL

    from napari_phendiff.core.models.latent import vae_decode, vae_encode

    vae = AutoencoderKL.from_pretrained(vae_folder).eval() if vae_folder is not None else None
    slots = train_base.SLOTS if vae is not None and vae.config.in_channels == 1 else 1
    fields = {c: [simulate_field(phenotype, c, 64, seed=100 + i, cell_diameter=20.0) for i in range(8)] for c in (0, 1)}
    images = [f.image for c in (0, 1) for f in fields[c]]
    norm = Normalization.fit(images)
    x = torch.from_numpy(norm.forward(np.stack(images)))
    with torch.no_grad():
        decoded = vae_decode(vae, vae_encode(vae, x, slots), x.shape[1], slots) if vae is not None else blurred(x)
    psnr = float(10 * np.log10(4 / ((decoded - x) ** 2).mean()))
    recon = norm.inverse(decoded.numpy(), images[0].dtype)
    values = {}
    for c in (0, 1):
        pairs = [
            (
                measure_phenotype(f.image, f.nuclei, f.cells, phenotype),
                measure_phenotype(r, f.nuclei, f.cells, phenotype),
            )
            for f, r in zip(fields[c], recon[c * 8 :])
        ]
        original = np.concatenate([o for o, _ in pairs])
        rebuilt = np.concatenate([r for _, r in pairs])
        ok = ~np.isnan(original) & ~np.isnan(rebuilt)
        values[c] = (original[ok], rebuilt[ok])
    medians = {c: float(np.median(values[c][0])) for c in (0, 1)}
    kept = np.concatenate([np.abs(values[c][1] - medians[c]) < np.abs(values[c][1] - medians[1 - c]) for c in (0, 1)])
    return {
        "psnr_db": psnr,
        "kept": float(kept.mean()),
        **{f"median_{c}": medians[c] for c in (0, 1)},
        **{f"median_rebuilt_{c}": float(np.median(values[c][1])) for c in (0, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="train_base.py's work folder (its corpus)")
    parser.add_argument(
        "--configs", nargs="+", default=["4x4", "4x16"], help="FACTORxLATENT_CHANNELS[x3: one per channel slot]"
    )
    parser.add_argument("--init-from", type=Path, help="an RGB VAE folder the one-channel VAEs start from")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--held-out", default="translocation", help="the phenotype the corpus holds none of")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--section", default="base_vae", help="the docs/benchmarks.md section written")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = train_base.read_corpus(args.work / "corpus")
    rows = []
    for spec in [*args.configs, "blur"]:
        if spec == "blur":
            folder, label, steps = args.work / "blur_4x", "4x blur (reference)", "-"
            folder.mkdir(exist_ok=True)
        else:
            factor, channels, slots = (int(v) for v in f"{spec}x1".split("x")[:3])
            label = f"{factor}x, {channels}" + (f" per channel ({slots} slots)" if slots > 1 else "")
            folder, steps = args.work / f"vae_{spec}_{args.steps}", args.steps
            init = args.init_from if slots > 1 else None
            train_base.train_vae(
                args.work,
                images,
                args.steps,
                8,
                out=folder,
                config=train_base.vae_config(factor, channels, slots),
                init_from=init,
            )
            label += f", from {init.parent.name}'s RGB VAE" if init else ""
        for phenotype in PHENOTYPES:
            path = folder / f"preserved_{phenotype}.json"
            if not path.is_file():
                path.write_text(json.dumps(preserved(folder if spec != "blur" else None, phenotype)))
            r = json.loads(path.read_text())
            names = PHENOTYPES[phenotype].conditions
            rows.append(
                [
                    label,
                    steps,
                    phenotype + (" (not in the corpus)" if phenotype == args.held_out else ""),
                    f"{r['psnr_db']:.1f}",
                    f"{r['kept']:.2f}",
                    f"{names[0]} {r['median_0']:.2f} -> {r['median_rebuilt_0']:.2f}; "
                    f"{names[1]} {r['median_1']:.2f} -> {r['median_rebuilt_1']:.2f}",
                ]
            )
            print(rows[-1], flush=True)
    markdown = (
        f"Hardware: {hardware()}. Each VAE trained {args.steps} steps (batch 8, 64-px crops of the base's "
        "corpus); 8 fields per condition and phenotype encoded and decoded. *kept*: share of cells whose "
        "reconstructed phenotype is still closer to its own condition's real median than to the other's; "
        "*medians*: the phenotype's median per condition, original -> reconstructed. The 4x blur (each channel "
        "averaged over 4 x 4 blocks and interpolated back) is a reference: what the latents' 16 x 16 grid "
        "keeps without any learning.\n\n"
        + table(["VAE (factor, latent channels)", "steps", "phenotype", "PSNR dB", "kept", "medians"], rows)
    )
    print(markdown)
    if not args.no_write:
        print(f"written to {write_section(args.section, markdown)}")


if __name__ == "__main__":
    main()
