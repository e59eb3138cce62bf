// What the model takes and gives. Written by edgefire @version@; do not edit.
#ifndef EDGEFIRE_MODEL_SETTINGS_H_
#define EDGEFIRE_MODEL_SETTINGS_H_

#include <cstdint>

// Input: one RGB image, rows of pixels (NHWC, batch 1).
constexpr int kInputWidth = @width@;
constexpr int kInputHeight = @height@;
constexpr int kInputChannels = @channels@;
constexpr int kInputElements = kInputWidth * kInputHeight * kInputChannels;
using InputType = @input_type@;
constexpr float kInputScale = @input_scale@;
constexpr int kInputZeroPoint = @input_zero_point@;

// Pixel p (0-255) of channel c becomes the input value
//   clamp(round(((p - kPixelMean[c]) / kPixelStd[c]) / kInputScale) + kInputZeroPoint)
// (with the defaults, a uint8 input takes the camera's pixels unchanged).
constexpr float kPixelMean[3] = {@mean@};
constexpr float kPixelStd[3] = {@std@};

// Output: one score per class; score = (value - kOutputZeroPoint) * kOutputScale.
constexpr int kNumClasses = @classes@;
using OutputType = @output_type@;
constexpr float kOutputScale = @output_scale@;
constexpr int kOutputZeroPoint = @output_zero_point@;

// Class names (UTF-8), in the order of the output's scores.
constexpr const char* kCategoryLabels[kNumClasses] = {
@labels@
};

// TFLite Micro used @measured_arena@ bytes of arena for this model (measured by edgefire with
// the reference kernels on a 64-bit host); this is that plus at most @margin@, a multiple of 16.
// Optimized kernels (CMSIS-NN) may ask for scratch memory beyond it: main.cc prints what
// AllocateTensors needed on your target.
constexpr int kMeasuredArenaSize = @measured_arena@;
constexpr int kTensorArenaSize = @arena@;

#endif  // EDGEFIRE_MODEL_SETTINGS_H_
