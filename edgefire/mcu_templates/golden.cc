// Written by edgefire @version@; do not edit.
#include "golden.h"

const @input_type@ g_golden_inputs[kGoldenCount][kInputElements] = {
@inputs@
};

const @output_type@ g_golden_outputs[kGoldenCount][kNumClasses] = {
@outputs@
};

const int g_golden_labels[kGoldenCount] = {
@labels@
};
