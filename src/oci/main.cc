#include "oci/commands.h"

int main(int argc, char** argv) { return microvm::oci::runtimeMain(argc, argv); }
