// A self-test for the target: runs the golden images through TFLite Micro and compares the
// outputs with the ones edgefire measured. Written by edgefire 0.1.0.
#include <cstdlib>
#include <cstring>

#include "golden.h"
#include "model_data.h"
#include "model_settings.h"
#include "op_resolver.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {
alignas(16) uint8_t tensor_arena[kTensorArenaSize];

// The largest difference between an output and its golden values.
int LargestDifference(const OutputType* scores, const OutputType* golden) {
  int largest = 0;
  for (int c = 0; c < kNumClasses; ++c) {
    const int difference = std::abs(static_cast<int>(scores[c]) - golden[c]);
    if (difference > largest) largest = difference;
  }
  return largest;
}
}  // namespace

int main() {
  tflite::InitializeTarget();
  const tflite::Model* model = tflite::GetModel(g_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("model schema %d, this TFLite Micro reads %d", model->version(),
                TFLITE_SCHEMA_VERSION);
    return 1;
  }
  ModelOpResolver resolver;
  if (RegisterModelOps(resolver) != kTfLiteOk) return 1;
  tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("AllocateTensors failed: kTensorArenaSize (%d) is too small here", kTensorArenaSize);
    return 1;
  }
  MicroPrintf("arena: %d of %d bytes used", static_cast<int>(interpreter.arena_used_bytes()),
              kTensorArenaSize);
  int failed = 0;
  for (int i = 0; i < kGoldenCount; ++i) {
    std::memcpy(interpreter.input(0)->data.raw, g_golden_inputs[i], sizeof(g_golden_inputs[i]));
    if (interpreter.Invoke() != kTfLiteOk) {
      MicroPrintf("golden image %d: Invoke failed", i);
      return 1;
    }
    const auto* scores = reinterpret_cast<const OutputType*>(interpreter.output(0)->data.raw);
    const int difference = LargestDifference(scores, g_golden_outputs[i]);
    MicroPrintf("golden image %d (class %s): largest difference %d", i,
                kCategoryLabels[g_golden_labels[i]], difference);
    if (difference > kGoldenTolerance) ++failed;
  }
  if (failed) {
    MicroPrintf("FAIL: %d of %d golden images differ", failed, kGoldenCount);
    return 1;
  }
  MicroPrintf("PASS");
  return 0;
}
