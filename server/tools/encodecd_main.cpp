#include "encodec/server_cli.h"

int main(int argc, char** argv) { return encodec::server::run_encodecd(argc, argv); }
