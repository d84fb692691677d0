#include "cli.h"

int main(int argc, char** argv) { return microvm::cli::main(argc, argv); }
