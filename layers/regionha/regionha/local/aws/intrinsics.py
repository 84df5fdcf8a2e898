"""CloudFormation intrinsic functions resolved as CloudFormation resolves them (``Ref``, ``Fn::GetAtt``,
``Fn::Sub``, ``Fn::Join``, ``Fn::If``, ``AWS::NoValue``...), and the references between resources
that order their creation (AWS CloudFormation user guide, "Intrinsic function reference")."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from regionha.errors import ConfigurationError

NO_VALUE = object()  # AWS::NoValue: the property or list item disappears
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def ref_targets(value: Any) -> Iterator[str]:
    """Logical names a value refers to (Ref, GetAtt, Sub variables): the dependency graph's edges."""
    if isinstance(value, list):
        for item in value:
            yield from ref_targets(item)
    elif isinstance(value, dict):
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref" and isinstance(arg, str):
                yield arg
                return
            if key == "Fn::GetAtt":
                target = arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0]
                yield target
                return
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                for name in _SUB_VARIABLE.findall(text):
                    if not name.startswith("!") and name.split(".", 1)[0] not in variables:
                        yield name.split(".", 1)[0]
                yield from ref_targets(variables)
                return
        for item in value.values():
            yield from ref_targets(item)


class Intrinsics:
    """CloudFormation's intrinsic functions over parameters, conditions and created resources."""

    def __init__(self, pseudo: dict[str, Any], parameters: dict[str, Any], conditions: dict[str, Any],
                 mappings: dict[str, Any], resource_ref: Callable[[str], Any],
                 resource_attribute: Callable[[str, str], Any]):
        self._pseudo = pseudo
        self._parameters = parameters
        self._conditions = conditions
        self._mappings = mappings
        self._resource_ref = resource_ref
        self._resource_attribute = resource_attribute
        self._condition_values: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._condition_values:
            if name not in self._conditions:
                raise ConfigurationError(f"condition {name!r} is not defined")
            self._condition_values[name] = bool(self.resolve(self._conditions[name]))
        return self._condition_values[name]

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._parameters:
            return self._parameters[name]
        return self._resource_ref(name)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(item) for item in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            function = _FUNCTIONS.get(key)
            if function is not None:
                return function(self, arg)
            if key.startswith("Fn::"):
                raise ConfigurationError(f"intrinsic function {key} is not supported by the local runtime")
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _ref(self, arg: Any) -> Any:
        return self.ref(arg)

    def _get_att(self, arg: Any) -> Any:
        if isinstance(arg, str):
            logical_id, _, attribute = arg.partition(".")
        else:
            logical_id, attribute = arg[0], self.resolve(arg[1])
        return self._resource_attribute(logical_id, attribute)

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the escape for a literal ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                value = variables[name]
            elif "." in name:
                logical_id, attribute = name.split(".", 1)
                value = self._resource_attribute(logical_id, attribute)
            else:
                value = self.ref(name)
            if isinstance(value, bool | dict | list) or value is NO_VALUE:
                raise ConfigurationError(f"Fn::Sub variable ${{{name}}} is not a string: {value!r}")
            return str(value)

        return _SUB_VARIABLE.sub(replace, text)

    def _join(self, arg: Any) -> str:
        delimiter, items = arg[0], self.resolve(arg[1])
        return delimiter.join(str(item) for item in items)

    def _select(self, arg: Any) -> Any:
        index, items = int(self.resolve(arg[0])), self.resolve(arg[1])
        if not 0 <= index < len(items):
            raise ConfigurationError(f"Fn::Select index {index} is out of range for {items!r}")
        return items[index]

    def _split(self, arg: Any) -> list[str]:
        return str(self.resolve(arg[1])).split(arg[0])

    def _if(self, arg: Any) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)

    def _equals(self, arg: Any) -> bool:
        left, right = (self.resolve(a) for a in arg)
        return str(left) == str(right)

    def _not(self, arg: Any) -> bool:
        return not self.resolve(arg[0])

    def _and(self, arg: Any) -> bool:
        return all(self.resolve(a) for a in arg)

    def _or(self, arg: Any) -> bool:
        return any(self.resolve(a) for a in arg)

    def _condition(self, arg: Any) -> bool:
        return self.condition(arg)

    def _find_in_map(self, arg: Any) -> Any:
        name, top, second = (self.resolve(a) for a in arg[:3])
        try:
            return self._mappings[name][top][second]
        except KeyError:
            raise ConfigurationError(f"Fn::FindInMap: {name}/{top}/{second} is not in Mappings") from None

    def _get_azs(self, arg: Any) -> list[str]:
        region = self.resolve(arg) or self._pseudo["AWS::Region"]
        return [f"{region}{suffix}" for suffix in "abc"]

    def _base64(self, arg: Any) -> str:
        import base64

        return base64.b64encode(str(self.resolve(arg)).encode()).decode()


_FUNCTIONS: dict[str, Callable[[Intrinsics, Any], Any]] = {
    "Ref": Intrinsics._ref,
    "Fn::GetAtt": Intrinsics._get_att,
    "Fn::Sub": Intrinsics._sub,
    "Fn::Join": Intrinsics._join,
    "Fn::Select": Intrinsics._select,
    "Fn::Split": Intrinsics._split,
    "Fn::If": Intrinsics._if,
    "Fn::Equals": Intrinsics._equals,
    "Fn::Not": Intrinsics._not,
    "Fn::And": Intrinsics._and,
    "Fn::Or": Intrinsics._or,
    "Condition": Intrinsics._condition,
    "Fn::FindInMap": Intrinsics._find_in_map,
    "Fn::GetAZs": Intrinsics._get_azs,
    "Fn::Base64": Intrinsics._base64,
}
