/* The version of the gad headers; gad_version() / gad::version() report the library loaded. */
#ifndef GAD_VERSION_H
#define GAD_VERSION_H
#define GAD_VERSION_MAJOR 0
#define GAD_VERSION_MINOR 1
#define GAD_VERSION_PATCH 0
#endif
