"""Every standardization method behind one interface, trained and saved the same way.

A method folder holds ``config.json`` (``method``, kernels, settings) and safetensors weights.
``load_method(folder)`` (``methods.registry``) returns an object with ``convert_slices(hu, steps, seed, batch_size,
progress) -> hu``: the method's own mapping, which ``standardize.Standardizer`` wraps with the input checks, the
clipping to the writer's range and the air kept. ``diffusionct.train.methods.train_method(name, ...)`` trains one
from a manifest (inference never imports training).

The package, one home for "a method, its saved model and a library of them":

* ``base.py``         the interface every method implements (``Method``)
* ``classical.py``    identity, histogram matching, the calibrated kernel filter
* ``networks.py``     the learned baselines: encoder-decoder, residual CNN, pix2pix, CycleGAN, image DDPM
* ``diffusionct.py``  the main model
* ``registry.py``     every method by its name, and ``load_method``
* ``store.py``        a model folder: config.json and its schema, safetensors weights and their checksums
* ``library.py``      a folder of kernel-gap models: routing by kernels and pixel size, shared networks

The method names are spelled here, once, without torch (the command line lists them before loading anything):
``diffusionct train --method NAME``.
"""

IDENTITY = "identity"  # no change (the paper's baseline row)
HISTOGRAM = "histogram"  # quantile (histogram) matching of body voxels to the target kernel's distribution
KERNEL_FILTER = "kernel-filter"  # the calibrated linear filter W_target / W_source of two kernel profiles (physics)
AUTOENCODER = "autoencoder"  # the trained encoder-decoder alone: encode A, decode (the paper's Encoder-Decoder row)
RESIDUAL_CNN = "residual-cnn"  # Choe et al. 2019 residual CNN
PIX2PIX = "pix2pix"  # conditional GAN of the GANai / STAN-CT family (U-Net generator, PatchGAN)
CYCLEGAN = "cyclegan"  # unpaired GAN of the CVH-CT / UDA-CT family (two generators, cycle consistency)
DDPM = "ddpm"  # image-space conditional DDPM (SR3 / Palette style; the paper's DDPM row)
DIFFUSIONCT = "diffusionct"  # the main model (the default)

METHODS = (IDENTITY, HISTOGRAM, KERNEL_FILTER, AUTOENCODER, RESIDUAL_CNN, PIX2PIX, CYCLEGAN, DDPM, DIFFUSIONCT)
