"""A run folder as one ONNX file to ship (`cnncodes export`), and the standalone script beside it.

`model` builds the run as one torch module (uint8 crops in; normalisation, trunk and head inside;
class scores and the arg max out), `onnx_file` exports it with torch's default (dynamo) exporter
and writes the class names and the preprocessing recipe into the file's metadata, `check` times
onnxruntime against predict's own computation on the same images and compares their scores, and
`standalone` is the source of DIR/predict.py (onnxruntime, numpy and Pillow only; `--reject` applies
the run's rejection rule, which `model` puts into the file as a third output). docs/export.md
says what the file holds.
"""
