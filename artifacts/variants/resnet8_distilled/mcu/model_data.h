// The int8 TFLite model's bytes. Written by edgefire 0.1.0; do not edit.
// resnet8_int8.tflite: 94514 bytes, sha256 4367d88be7b430b2666eac4f523fcc343a31d4cccf5d49bab3e786161286dbe6

#ifndef EDGEFIRE_MODEL_DATA_H_
#define EDGEFIRE_MODEL_DATA_H_

extern const unsigned char g_model[];
extern const unsigned int g_model_len;

#endif  // EDGEFIRE_MODEL_DATA_H_
