"""The torch runtime: device, precision and thread set-up, GPU choice, torchrun launching, pretrained-weight
resolution.
"""
