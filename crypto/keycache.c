/* placeholder: written in #5 */
#include "crypto/keycache.h"
