"""Run inside the MediaPipe virtual environment (no edgefire, no TensorFlow there).

    python mediapipe_classify.py MODEL.tflite IMAGES.npy

Prints one JSON line: [index, category name, score] of the top category per image, as the
MediaPipe Tasks ImageClassifier (the Android/iOS/web on-device API) answers.
"""

import json
import sys

import mediapipe as mp
import numpy as np
from mediapipe.tasks import python as tasks
from mediapipe.tasks.python import vision

model, images = sys.argv[1], np.load(sys.argv[2])
options = vision.ImageClassifierOptions(base_options=tasks.BaseOptions(model_asset_path=model),
                                        max_results=1)
answers = []
with vision.ImageClassifier.create_from_options(options) as classifier:
    for pixels in images:
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))
        top = classifier.classify(image).classifications[0].categories[0]
        answers.append([top.index, top.category_name, top.score])
print(json.dumps(answers))
