/* libstrongroom.so is made of the component libraries' objects; this
 * file only gives the target a source of its own and a version symbol. */
#include "common.h"

const char *sr_version(void) { return "strongroom " SR_VERSION_STRING; }
