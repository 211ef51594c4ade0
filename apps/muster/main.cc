// `muster`: the operator CLI. Wiring only; everything lives in src/cli.
#include "cli/app.h"

int main(int argc, char** argv) { return muster::cli::runMuster(argc, argv); }
