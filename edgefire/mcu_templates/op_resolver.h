// The operators this model uses, read from its flatbuffer: @ops@.
// Written by edgefire @version@; do not edit.
#ifndef EDGEFIRE_OP_RESOLVER_H_
#define EDGEFIRE_OP_RESOLVER_H_

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

constexpr int kNumOps = @count@;
using ModelOpResolver = tflite::MicroMutableOpResolver<kNumOps>;

// Registers exactly the model's operators (no others are linked in).
inline TfLiteStatus RegisterModelOps(ModelOpResolver& resolver) {
@calls@
  return kTfLiteOk;
}

#endif  // EDGEFIRE_OP_RESOLVER_H_
