"""Run inside the MediaPipe virtual environment (no edgefire, no TensorFlow there).

    python mediapipe_classify.py MODEL.tflite IMAGES.npy
    python mediapipe_classify.py MODEL.tflite IMAGE_FILE...

Prints one JSON line: [index, category name, score] of the top category per image, as the
MediaPipe Tasks ImageClassifier (the Android/iOS/web on-device API) answers. Image files of
any size are decoded and resized by MediaPipe itself.
"""

import json
import sys

import mediapipe as mp
import numpy as np
from mediapipe.tasks import python as tasks
from mediapipe.tasks.python import vision

model, inputs = sys.argv[1], sys.argv[2:]
if inputs[0].endswith(".npy"):
    images = [mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))
              for pixels in np.load(inputs[0])]
else:
    images = [mp.Image.create_from_file(path) for path in inputs]


def rgb(image):
    """A grayscale file as RGB: the ImageClassifier hands a GRAY8 image to the model as one
    channel and fails on a 3-channel input, so apps convert gray to RGB first."""
    if image.image_format in (mp.ImageFormat.SRGB, mp.ImageFormat.SRGBA):
        return image
    pixels = image.numpy_view()
    gray = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)[:, :, :1]
    return mp.Image(image_format=mp.ImageFormat.SRGB,
                    data=np.ascontiguousarray(np.repeat(gray, 3, axis=2)))


images = [rgb(image) for image in images]
options = vision.ImageClassifierOptions(base_options=tasks.BaseOptions(model_asset_path=model),
                                        max_results=1)
answers = []
with vision.ImageClassifier.create_from_options(options) as classifier:
    for image in images:
        top = classifier.classify(image).classifications[0].categories[0]
        answers.append([top.index, top.category_name, top.score])
print(json.dumps(answers))
