"""Benchmarks: our stages against the PyTorch transfer-learning tutorial's way, same data, same run.

Usage (from the repository root): python -m bench [--quick] --data DIR --backbone NAME --weights W \\
    --out reports/benchmarks.json

Sections (one module each; each section a function returning result rows, see __main__.SECTIONS):
  extraction   images/s of `features` vs a tutorial-style eval pass (PIL + transforms per image,
               batch 16, fp32, no channels_last); on a GPU also 10,000 synthetic ImageNet-size
               JPEGs (--decode gpu, with and without --compile, and --decode cpu) against the
               15,000 images/s target
  precision    `features` in fp32 and bf16 against the pure model at the same batch and precision
               (decoded tensors: the ceiling on this machine): the fraction of it, >= 0.85 wanted; the
               bf16/fp32 ratios of both (ResNet18 on a CPU: >= 1.5x), interleaved, best of 2 rounds
  frozen       extract once + softmax head (classify) vs the tutorial's frozen-backbone scheme
               (finetune --mode frozen --loop reference, 25 epochs): >= 30x faster at equal accuracy
  finetune     full fine-tuning, fast path vs reference loop: CPU >= 1.5x per epoch, GPU >= 10x for
               25 epochs (on a GPU also the fast path with --compile, i.e. CUDA graphs)
  memory       peak RSS of `features` at N and 10N small synthetic images: must not grow (within 10%);
               the full run also measures `features` with default settings (decoding workers) on
               real-size images, per process, at 2,000 and 20,000 images
  heads        fit time of each head on the DATA codes (CV); `classify --head all` on synthetic codes
               shaped like real ones (3,500 x 1280 and 100,000 x 512, classes that overlap) against
               `features` on as many images, timed in the same run: heads must take less time than extraction
  streaming    peak RSS of the out-of-core sgd head at 100,000 and 1,000,000 synthetic 512-d codes
               (quick: 20,000 / 200,000): within 10% of each other
  ranks        `features` on 2 torchrun ranks vs 1 process, same synthetic images (CPU), wall time
  audit        `audit` on synthetic codes in a fresh process (1,000,000 x 512 through the neighbour index,
               100,000 x 512 through the exact search; quick: 5,000 each): seconds per part and peak RSS;
               the index's recall of the pairs exact search flags (100,000 codes, 1,000 planted leaks;
               target 0.95); with real weights also the label-issue AUROC with 10% of train labels
               flipped and the leak finder's recall/precision on val images copied into train (resized,
               cropped, re-saved)
  export       an exported head (ONNX, reject rule included) against `predict` on the same images:
               file size, ms per image at batch 1 and 32, same run

Shared: common (Setup, result rows, targets), timing (ours and the reference, timed; the
reference's worker probe), synthetic (image folders; synthetic codes come from
pipeline.codes.synthetic), launcher (the small process that measures a stage's peak RSS),
document (machine, versions, the text table).

The reference (the tutorial's way) always runs at its fastest DataLoader worker count on the
machine: 0, 1 and 4 workers are tried where the cores allow (one epoch each for the training
loops, a whole pass for extraction), and each row names the winner and what our side used.

Every row: name, ours, reference, unit, ratio (> 1 = we are faster/better), target, met
(true/false, or null when there is nothing to judge) and a note. Missed targets are reported, not
errors: the exit code is 0 when the benchmark ran, 2 (one line on stderr) for bad input.

This file imports nothing: `python -m bench.launcher` must stay a small process.
"""
