// The int8 TFLite model's bytes. Written by edgefire 0.1.0; do not edit.
// resnet8_int8.tflite: 95514 bytes, sha256 c62685ce6cae31c63de6ce5ccad5386974f33bd19457355304d0d35784690957

#ifndef EDGEFIRE_MODEL_DATA_H_
#define EDGEFIRE_MODEL_DATA_H_

extern const unsigned char g_model[];
extern const unsigned int g_model_len;

#endif  // EDGEFIRE_MODEL_DATA_H_
