/* placeholder: written in #5 */
#include "crypto/incoming.h"
