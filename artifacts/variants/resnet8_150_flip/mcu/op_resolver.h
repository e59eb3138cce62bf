// The operators this model uses, read from its flatbuffer: QUANTIZE, GATHER, CONCATENATION, CONV_2D, ADD, MEAN, FULLY_CONNECTED, SOFTMAX, RESHAPE.
// Written by edgefire 0.1.0; do not edit.
#ifndef EDGEFIRE_OP_RESOLVER_H_
#define EDGEFIRE_OP_RESOLVER_H_

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

constexpr int kNumOps = 9;
using ModelOpResolver = tflite::MicroMutableOpResolver<kNumOps>;

// Registers exactly the model's operators (no others are linked in).
inline TfLiteStatus RegisterModelOps(ModelOpResolver& resolver) {
  if (resolver.AddQuantize() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddGather() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddConcatenation() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddConv2D() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddAdd() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddMean() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddFullyConnected() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddSoftmax() != kTfLiteOk) return kTfLiteError;
  if (resolver.AddReshape() != kTfLiteOk) return kTfLiteError;
  return kTfLiteOk;
}

#endif  // EDGEFIRE_OP_RESOLVER_H_
