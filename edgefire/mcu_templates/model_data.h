// The int8 TFLite model's bytes. Written by edgefire @version@; do not edit.
@about@
#ifndef EDGEFIRE_MODEL_DATA_H_
#define EDGEFIRE_MODEL_DATA_H_

extern const unsigned char g_model[];
extern const unsigned int g_model_len;

#endif  // EDGEFIRE_MODEL_DATA_H_
