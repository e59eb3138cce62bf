// The int8 TFLite model's bytes. Written by edgefire @version@; do not edit.
@about@
#include "model_data.h"

// 16-byte aligned: TFLite Micro reads the flatbuffer's tensors in place.
alignas(16) const unsigned char g_model[] = {
@bytes@
};
const unsigned int g_model_len = @length@;
