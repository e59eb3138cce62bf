// What the model takes and gives. Written by edgefire 0.1.0; do not edit.
#ifndef EDGEFIRE_MODEL_SETTINGS_H_
#define EDGEFIRE_MODEL_SETTINGS_H_

#include <cstdint>

// Input: one RGB image, rows of pixels (NHWC, batch 1).
constexpr int kInputWidth = 32;
constexpr int kInputHeight = 32;
constexpr int kInputChannels = 3;
constexpr int kInputElements = kInputWidth * kInputHeight * kInputChannels;
using InputType = uint8_t;
constexpr float kInputScale = 0.003921568859368563f;
constexpr int kInputZeroPoint = 0;

// Pixel p (0-255) of channel c becomes the input value
//   clamp(round(((p - kPixelMean[c]) / kPixelStd[c]) / kInputScale) + kInputZeroPoint)
// (with the defaults, a uint8 input takes the camera's pixels unchanged).
constexpr float kPixelMean[3] = {0.0f, 0.0f, 0.0f};
constexpr float kPixelStd[3] = {255.0f, 255.0f, 255.0f};

// Output: one score per class; score = (value - kOutputZeroPoint) * kOutputScale.
constexpr int kNumClasses = 10;
using OutputType = uint8_t;
constexpr float kOutputScale = 0.003918427042663097f;
constexpr int kOutputZeroPoint = 0;

// Class names (UTF-8), in the order of the output's scores.
constexpr const char* kCategoryLabels[kNumClasses] = {
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck"
};

// TFLite Micro used 106016 bytes of arena for this model (measured by edgefire with
// the reference kernels on a 64-bit host); this is that plus at most 10%, a multiple of 16.
// Optimized kernels (CMSIS-NN) may ask for scratch memory beyond it: main.cc prints what
// AllocateTensors needed on your target.
constexpr int kMeasuredArenaSize = 106016;
constexpr int kTensorArenaSize = 116608;

#endif  // EDGEFIRE_MODEL_SETTINGS_H_
