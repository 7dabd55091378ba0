#include "encodec/client.h"

int main(int argc, char** argv) { return encodec::client::run_client_cli(argc, argv); }
