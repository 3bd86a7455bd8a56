/* tickpool entry point: placeholder until the server core lands. */
#include "tickpool/common.h"
int main(void)
{
    return 0;
}
