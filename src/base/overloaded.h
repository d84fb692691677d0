// Overloaded: a set of lambdas as one visitor for std::visit, one per
// alternative; a variant alternative no lambda takes fails to compile.
//
//   std::visit(Overloaded{[](const A& a) { ... }, [](const B& b) { ... }}, variant);
#pragma once

namespace microvm {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace microvm
