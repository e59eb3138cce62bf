// The int8 TFLite model's bytes. Written by edgefire 0.1.0; do not edit.
// squeezenet_int8.tflite: 99242 bytes, sha256 553e84040f34ef6092d1e609d063ba1a4c270466df3e43cde254540a15e8fc1c

#ifndef EDGEFIRE_MODEL_DATA_H_
#define EDGEFIRE_MODEL_DATA_H_

extern const unsigned char g_model[];
extern const unsigned int g_model_len;

#endif  // EDGEFIRE_MODEL_DATA_H_
