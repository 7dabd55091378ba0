#include "encodec/cli.h"

int main(int argc, char** argv) { return encodec::run_encodec_cli(argc, argv); }
