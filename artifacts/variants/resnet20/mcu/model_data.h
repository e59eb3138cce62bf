// The int8 TFLite model's bytes. Written by edgefire 0.1.0; do not edit.
// resnet20_int8.tflite: 307018 bytes, sha256 be722eba9e34c034a5b3ad7a716a6a3fe15486fa3000b4ed5ee1fff8c417ac36

#ifndef EDGEFIRE_MODEL_DATA_H_
#define EDGEFIRE_MODEL_DATA_H_

extern const unsigned char g_model[];
extern const unsigned int g_model_len;

#endif  // EDGEFIRE_MODEL_DATA_H_
