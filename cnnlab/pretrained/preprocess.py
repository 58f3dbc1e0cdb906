"""The preprocessing each source's weights were trained with, applied to RGB images.

- torchvision: resize the shorter side to the weights' `resize` (256; 232 for the V2 ResNet /
  MobileNetV2 files; EfficientNet 256-600) with PIL (bilinear, EfficientNet bicubic), centre
  crop `resolution` (224; EfficientNet 224-600), scale to [0, 1], subtract the ImageNet mean
  (0.485, 0.456, 0.406) and divide by the std (0.229, 0.224, 0.225): torchvision's
  `weights.transforms()` on a PIL image.
- Keras ResNet50 ('caffe'): RGB -> BGR, minus the mean pixel (103.939, 116.779, 123.68), no
  scaling; Keras MobileNetV2 ('tf'): x / 127.5 - 1. Keras' `image.load_img(target_size=(224,
  224))` resizes without keeping the aspect (nearest): images of another size are resized so.
"""

import numpy as np
from PIL import Image

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])
_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def _torchvision(img: Image.Image, resize: int, crop: int, interpolation: str) -> np.ndarray:
    w, h = img.size
    if w <= h:
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    img = img.resize(size, _RESAMPLE[interpolation])
    w, h = img.size
    top, left = round((h - crop) / 2.0), round((w - crop) / 2.0)  # torchvision's
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, np.float32) / 255.0
    return ((x - MEAN) / STD).astype(np.float32)


def _keras(img: Image.Image, size: int, mode: str) -> np.ndarray:
    if img.size != (size, size):
        img = img.resize((size, size), Image.NEAREST)
    x = np.asarray(img, np.float32)
    if mode == "caffe":
        return (x[..., ::-1] - CAFFE_MEAN_BGR).astype(np.float32)
    return (x / 127.5 - 1.0).astype(np.float32)


def preprocess(arch: str, images, weights: str = "IMAGENET1K_V1") -> np.ndarray:
    """RGB images (a uint8 array (H, W, 3) or (N, H, W, 3), PIL images, or a list of either)
    -> a float32 NHWC batch as the source's weights expect. `weights` picks torchvision's
    resize for files other than V1 (e.g. 'IMAGENET1K_V2': 232)."""
    from cnnlab.pretrained import source

    src = source(arch)
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    out = []
    for im in images:
        img = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, np.uint8))
        img = img.convert("RGB")
        if src.mode == "torch":
            if weights not in src.files:
                raise ValueError(f"{arch} has weights {sorted(src.files)}; got {weights!r}")
            resize = src.files[weights][1]
            out.append(_torchvision(img, resize, src.resolution, src.interpolation))
        else:
            out.append(_keras(img, src.resolution, src.mode))
    return np.stack(out)
