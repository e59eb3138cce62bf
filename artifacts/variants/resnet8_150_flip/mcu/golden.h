// Test images and the raw output tensors TFLite Micro gave for them, for a self-test on
// target. Written by edgefire 0.1.0; do not edit.
#ifndef EDGEFIRE_GOLDEN_H_
#define EDGEFIRE_GOLDEN_H_

#include "model_settings.h"

constexpr int kGoldenCount = 4;
// The largest difference allowed between an output value on target and the golden one:
// 0, as TFLite Micro's optimized kernels must match its reference kernels bit for bit.
constexpr int kGoldenTolerance = 0;

extern const uint8_t g_golden_inputs[kGoldenCount][kInputElements];
extern const uint8_t g_golden_outputs[kGoldenCount][kNumClasses];
extern const int g_golden_labels[kGoldenCount];  // each image's true class

#endif  // EDGEFIRE_GOLDEN_H_
