// The int8 TFLite model's bytes. Written by edgefire 0.1.0; do not edit.
// squeezenet_int8.tflite: 158042 bytes, sha256 b9d46c2c3a28cc71cd1681f8574fe05f3b720d83c08f07e2ba3c15e0011436f9

#ifndef EDGEFIRE_MODEL_DATA_H_
#define EDGEFIRE_MODEL_DATA_H_

extern const unsigned char g_model[];
extern const unsigned int g_model_len;

#endif  // EDGEFIRE_MODEL_DATA_H_
