/* main: placeholder until the core lands. */
#include "ca.h"
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "ca") == 0)
        return ca_cli_main(argc - 1, argv + 1);
    fprintf(stderr, "sluice: not yet\n");
    return 2;
}
