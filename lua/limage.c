/* PLACEHOLDER: replaced by the real implementation in this session */
#include "ltocha.h"
const luaL_Reg tcl_image_funcs[] = {{NULL, NULL}};
