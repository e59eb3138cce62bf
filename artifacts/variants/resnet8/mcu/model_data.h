// The int8 TFLite model's bytes. Written by edgefire 0.1.0; do not edit.
// resnet8_int8.tflite: 94514 bytes, sha256 b14dee414fc8bdd2d702befa928106be355a0667180362b234014c7749957fd0

#ifndef EDGEFIRE_MODEL_DATA_H_
#define EDGEFIRE_MODEL_DATA_H_

extern const unsigned char g_model[];
extern const unsigned int g_model_len;

#endif  // EDGEFIRE_MODEL_DATA_H_
