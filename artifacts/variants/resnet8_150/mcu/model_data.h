// The int8 TFLite model's bytes. Written by edgefire 0.1.0; do not edit.
// resnet8_int8.tflite: 94514 bytes, sha256 55d6b13e667250a5c87fc69ad57f3104a4efaaf1f7bd4a0e69dd574e8e29e19d

#ifndef EDGEFIRE_MODEL_DATA_H_
#define EDGEFIRE_MODEL_DATA_H_

extern const unsigned char g_model[];
extern const unsigned int g_model_len;

#endif  // EDGEFIRE_MODEL_DATA_H_
