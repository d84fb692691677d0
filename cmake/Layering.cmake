# One library target per subsystem, and the one-way rules between them
# (docs/ARCHITECTURE.md, "Source layout and dependencies") enforced by the
# compiler.
#
# A subsystem is compiled against an include *view*: a directory in the build
# tree holding links to its own headers and to those of the subsystems it may
# use, directly or through them, and nothing else of the tree. An
# `#include "runner/runner.h"` in a file of a subsystem that may not use the
# runner is then "No such file or directory" at build time
# (tests/layering/ proves it), and tests/check_layering.py checks headers and
# tests against the same rules, which this file writes to
# ${PROJECT_BINARY_DIR}/layering.json.
#
#   microvm_subsystem(NAME
#     [HEADERS entry...]   what dependents see: DIR=PATH (a folder) or DIR/FILE=PATH
#                          (one header); default: src/NAME as NAME
#     [SOURCES file...]    default: src/NAME/*.cc except tests
#     [DEPS subsystem...]  subsystems it may use (their own DEPS come with them)
#     [LIBS library...]    external libraries, linked PUBLIC
#     [INTERFACE_ONLY])    no sources: a view only (the public API)
#
# Each defines the target microvm_<NAME>, except INTERFACE_ONLY ones.

set(MICROVM_VIEW_ROOT ${PROJECT_BINARY_DIR}/include-views)
set_property(GLOBAL PROPERTY MICROVM_LAYERING_JSON "")

# The view of one subsystem: own headers + the views of its DEPS.
function(_microvm_view_entries out name headers deps)
  set(entries ${headers})
  foreach(dep IN LISTS deps)
    get_property(defined GLOBAL PROPERTY MICROVM_SUBSYSTEM_${dep})
    if(NOT defined)
      message(FATAL_ERROR "microvm_subsystem(${name}): DEPS ${dep} is not defined (yet)")
    endif()
    get_property(dep_entries GLOBAL PROPERTY MICROVM_VIEW_${dep})
    list(APPEND entries ${dep_entries})
  endforeach()
  list(REMOVE_DUPLICATES entries)
  set(${out} ${entries} PARENT_SCOPE)
endfunction()

# Materialises a view as links. A folder entry wins over single headers of it.
function(_microvm_make_view dir entries)
  file(REMOVE_RECURSE ${dir})
  file(MAKE_DIRECTORY ${dir})
  set(folders "")
  foreach(entry IN LISTS entries)
    string(REPLACE "=" ";" parts "${entry}")
    list(GET parts 0 name)
    if(NOT name MATCHES "/")
      list(APPEND folders ${name})
    endif()
  endforeach()
  foreach(entry IN LISTS entries)
    string(REPLACE "=" ";" parts "${entry}")
    list(GET parts 0 name)
    list(GET parts 1 target)
    get_filename_component(parent ${name} DIRECTORY)
    if(parent AND parent IN_LIST folders)
      continue()
    endif()
    if(parent)
      file(MAKE_DIRECTORY ${dir}/${parent})
    endif()
    file(CREATE_LINK ${target} ${dir}/${name} SYMBOLIC)
  endforeach()
endfunction()

# A JSON list of entries as {"name": "path relative to the project"}.
function(_microvm_json_list out entries)
  set(items "")
  foreach(entry IN LISTS entries)
    string(REPLACE "=" ";" parts "${entry}")
    list(GET parts 0 entry_name)
    list(GET parts 1 entry_path)
    file(RELATIVE_PATH entry_path ${PROJECT_SOURCE_DIR} ${entry_path})
    list(APPEND items "\"${entry_name}\": \"${entry_path}\"")
  endforeach()
  list(JOIN items ", " items)
  set(${out} "{${items}}" PARENT_SCOPE)
endfunction()

function(microvm_subsystem name)
  cmake_parse_arguments(ARG "INTERFACE_ONLY" "" "HEADERS;SOURCES;DEPS;LIBS" ${ARGN})
  if(NOT ARG_HEADERS AND NOT ARG_INTERFACE_ONLY)
    set(ARG_HEADERS "${name}=${PROJECT_SOURCE_DIR}/src/${name}")
  endif()
  if(NOT ARG_SOURCES AND NOT ARG_INTERFACE_ONLY)
    file(GLOB ARG_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${name}/*.cc)
    list(FILTER ARG_SOURCES EXCLUDE REGEX "_test\\.cc$")
  endif()
  set(sources "")
  foreach(source IN LISTS ARG_SOURCES)
    get_filename_component(source ${source} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
    list(APPEND sources ${source})
  endforeach()
  set(ARG_SOURCES ${sources})
  _microvm_view_entries(entries ${name} "${ARG_HEADERS}" "${ARG_DEPS}")
  set_property(GLOBAL PROPERTY MICROVM_VIEW_${name} ${entries})
  set_property(GLOBAL PROPERTY MICROVM_SUBSYSTEM_${name} TRUE)
  set(view ${MICROVM_VIEW_ROOT}/${name})
  _microvm_make_view(${view} "${entries}")

  # layering.json: {"subsystem": {"own": [entry...], "view": [entry...], "sources": [...]}}
  _microvm_json_list(own_json "${ARG_HEADERS}")
  _microvm_json_list(view_json "${entries}")
  set(sources "")
  foreach(source IN LISTS ARG_SOURCES)
    file(RELATIVE_PATH source ${PROJECT_SOURCE_DIR} ${source})
    list(APPEND sources "\"${source}\"")
  endforeach()
  list(JOIN sources ", " sources)
  set_property(GLOBAL APPEND_STRING PROPERTY MICROVM_LAYERING_JSON
    "  \"${name}\": {\"own\": ${own_json}, \"view\": ${view_json}, \"sources\": [${sources}]},\n")

  if(ARG_INTERFACE_ONLY)
    return()
  endif()
  add_library(microvm_${name} STATIC ${ARG_SOURCES})
  target_include_directories(microvm_${name}
    PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_BINARY_DIR}/include
    PRIVATE ${view})
  set(dep_targets "")
  foreach(dep IN LISTS ARG_DEPS)
    if(TARGET microvm_${dep})
      list(APPEND dep_targets microvm_${dep})
    endif()
  endforeach()
  target_link_libraries(microvm_${name} PUBLIC ${dep_targets} ${ARG_LIBS} PRIVATE microvm_warnings)
endfunction()

# Compiles a target against a subsystem's view (a binary's main, for example).
function(microvm_use_view target name)
  target_include_directories(${target} PRIVATE ${MICROVM_VIEW_ROOT}/${name})
endfunction()

# Writes ${PROJECT_BINARY_DIR}/layering.json once every subsystem is defined.
function(microvm_write_layering_json)
  get_property(json GLOBAL PROPERTY MICROVM_LAYERING_JSON)
  string(REGEX REPLACE ",\n$" "\n" json "${json}")
  file(WRITE ${PROJECT_BINARY_DIR}/layering.json "{\n${json}}\n")
endfunction()
