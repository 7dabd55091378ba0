// encodec-train: see train/include/encodec/train.h and README.md, Training.
#include "encodec/train.h"

int main(int argc, char** argv) { return encodec::train::train_main(argc, argv); }
