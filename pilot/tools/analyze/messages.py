"""The analysis messages pilot reports, with istioctl's codes, levels and texts
(``pkg/config/analysis/msg/messages.yaml``), and how they are printed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DOCS_URL = "https://istio.io/latest/docs/reference/config/analysis"
LEVEL_ORDER = {"Error": 0, "Warning": 1, "Info": 2}


@dataclass(frozen=True)
class MessageType:
    code: str
    name: str
    level: str  # Error, Warning or Info
    template: str  # Go format verbs (%s %v %q %d), filled by ``text``


DEPRECATED = MessageType("IST0002", "Deprecated", "Warning", "Deprecated: %s")
REFERENCED_RESOURCE_NOT_FOUND = MessageType(
    "IST0101", "ReferencedResourceNotFound", "Error", "Referenced %s not found: %q"
)
SCHEMA_VALIDATION_ERROR = MessageType("IST0106", "SchemaValidationError", "Error", "Schema validation error: %v")
CONFLICTING_MESH_GATEWAY_VS_HOSTS = MessageType(
    "IST0109",
    "ConflictingMeshGatewayVirtualServiceHosts",
    "Error",
    "The VirtualServices %s associated with mesh gateway define the same host %s which can lead to undefined "
    "behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
)
CONFLICTING_SIDECAR_WORKLOAD_SELECTORS = MessageType(
    "IST0110",
    "ConflictingSidecarWorkloadSelectors",
    "Error",
    "The Sidecars %v in namespace %q select the same workload pod %q, which can lead to undefined behavior.",
)
MULTIPLE_SIDECARS_WITHOUT_SELECTORS = MessageType(
    "IST0111",
    "MultipleSidecarsWithoutWorkloadSelectors",
    "Error",
    "The Sidecars %v in namespace %q have no workload selector, which can lead to undefined behavior.",
)
VS_DESTINATION_PORT_SELECTOR_REQUIRED = MessageType(
    "IST0112",
    "VirtualServiceDestinationPortSelectorRequired",
    "Error",
    "This VirtualService routes to a service %q that exposes multiple ports %v. Specifying a port in the "
    "destination is required to disambiguate.",
)
PORT_NAME_NOT_UNDER_NAMING_CONVENTION = MessageType(
    "IST0118",
    "PortNameIsNotUnderNamingConvention",
    "Info",
    "Port name %s (port: %d, targetPort: %s) doesn't follow the naming convention of Istio port.",
)
NO_SERVER_CERT_VERIFICATION_DESTINATION = MessageType(
    "IST0128",
    "NoServerCertificateVerificationDestinationLevel",
    "Warning",
    "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to validate server "
    "identity for host: %s",
)
NO_SERVER_CERT_VERIFICATION_PORT = MessageType(
    "IST0129",
    "NoServerCertificateVerificationPortLevel",
    "Warning",
    "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to validate server "
    "identity for host: %s at port %s",
)
VS_UNREACHABLE_RULE = MessageType(
    "IST0130", "VirtualServiceUnreachableRule", "Warning", "VirtualService rule %v not used (%s)."
)
VS_INEFFECTIVE_MATCH = MessageType(
    "IST0131",
    "VirtualServiceIneffectiveMatch",
    "Info",
    "VirtualService rule %v match %v is not used (duplicate/overlapping match in rule %v).",
)
VS_HOST_NOT_FOUND_IN_GATEWAY = MessageType(
    "IST0132",
    "VirtualServiceHostNotFoundInGateway",
    "Warning",
    "one or more host %v defined in VirtualService %s not found in Gateway %s.",
)
SCHEMA_WARNING = MessageType("IST0133", "SchemaWarning", "Warning", "Schema validation warning: %v")
SERVICE_ENTRY_ADDRESSES_REQUIRED = MessageType(
    "IST0134", "ServiceEntryAddressesRequired", "Warning", "ServiceEntry addresses are required for this protocol."
)
INGRESS_ROUTE_RULES_NOT_AFFECTED = MessageType(
    "IST0140",
    "IngressRouteRulesNotAffected",
    "Warning",
    "Subset in virtual service %s has no effect on ingress gateway %s requests",
)
CONFLICTING_GATEWAYS = MessageType(
    "IST0145",
    "ConflictingGateways",
    "Error",
    "Conflict with gateways %s (workload selector %s, port %s, hosts %v).",
)
EXTERNAL_NAME_INVALID_PORT_NAME = MessageType(
    "IST0150",
    "ExternalNameServiceTypeInvalidPortName",
    "Warning",
    "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for "
    "ports serving TCP protocol from being forwarded correctly",
)
REFERENCED_INTERNAL_GATEWAY = MessageType(
    "IST0165",
    "ReferencedInternalGateway",
    "Warning",
    "Gateway reference in VirtualService %s is to an implementation-generated internal Gateway: %s.",
)
INEFFECTIVE_POLICY = MessageType("IST0167", "IneffectivePolicy", "Warning", "The policy has no impact: %s.")
GATEWAY_PORT_NOT_DEFINED_ON_SERVICE = MessageType(
    "IST0162",
    "GatewayPortNotDefinedOnService",
    "Warning",
    "The gateway is listening on a target port (port %d) that is not defined in the Service associated with its "
    "workload instances (Pod selector %s). If you need to access the gateway port through the gateway Service, it "
    "will not be available.",
)
DESTINATION_RULE_SUBSET_NOT_SELECT_PODS = MessageType(
    "IST0173",
    "DestinationRuleSubsetNotSelectPods",
    "Error",
    "The Subset %s defined in the DestinationRule does not select any pods. Which may lead to 503 UH "
    "(NoHealthyUpstream).",
)
UNKNOWN_DESTINATION_RULE_HOST = MessageType(
    "IST0174",
    "UnknownDestinationRuleHost",
    "Warning",
    "The host %s defined in the DestinationRule does not match any services in the mesh.",
)
CONFLICTING_SERVICE_ENTRY_PROTOCOL = MessageType(
    "IST0177",
    "ConflictingServiceEntryProtocol",
    "Warning",
    "Multiple ServiceEntries (%s) define the same host %q and port %d with conflicting protocols (%s).",
)

ALL = (
    DEPRECATED,
    REFERENCED_RESOURCE_NOT_FOUND,
    SCHEMA_VALIDATION_ERROR,
    CONFLICTING_MESH_GATEWAY_VS_HOSTS,
    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
    MULTIPLE_SIDECARS_WITHOUT_SELECTORS,
    VS_DESTINATION_PORT_SELECTOR_REQUIRED,
    PORT_NAME_NOT_UNDER_NAMING_CONVENTION,
    NO_SERVER_CERT_VERIFICATION_DESTINATION,
    NO_SERVER_CERT_VERIFICATION_PORT,
    VS_UNREACHABLE_RULE,
    VS_INEFFECTIVE_MATCH,
    VS_HOST_NOT_FOUND_IN_GATEWAY,
    SCHEMA_WARNING,
    SERVICE_ENTRY_ADDRESSES_REQUIRED,
    INGRESS_ROUTE_RULES_NOT_AFFECTED,
    CONFLICTING_GATEWAYS,
    EXTERNAL_NAME_INVALID_PORT_NAME,
    GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
    REFERENCED_INTERNAL_GATEWAY,
    INEFFECTIVE_POLICY,
    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
    UNKNOWN_DESTINATION_RULE_HOST,
    CONFLICTING_SERVICE_ENTRY_PROTOCOL,
)
BY_CODE = {m.code: m for m in ALL}


def go_format(template: str, params: tuple[Any, ...]) -> str:
    """Fill Go's %s, %v, %d and %q verbs (the subset messages.yaml uses), as fmt.Sprintf prints them."""
    out = []
    i = 0
    args = iter(params)
    while i < len(template):
        char = template[i]
        if char == "%" and i + 1 < len(template):
            verb = template[i + 1]
            i += 2
            if verb == "%":
                out.append("%")
                continue
            value = next(args, "")
            out.append(_go_value(value, verb))
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _go_value(value: Any, verb: str) -> str:
    if verb == "q":
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + " ".join(_go_value(v, "v") for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class Origin:
    """Where a message points: the object, and the file and line it came from."""

    kind: str
    namespace: str
    name: str
    file: str = ""
    line: int = 0

    @property
    def friendly_name(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    @property
    def reference(self) -> str:
        return f"{self.file}:{self.line}" if self.file else ""


@dataclass(frozen=True)
class Message:
    type: MessageType
    origin: Origin | None
    params: tuple[Any, ...] = ()
    line: int = 0  # the line of the field at fault, when known (else the object's)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def text(self) -> str:
        return go_format(self.type.template, self.params)

    @property
    def reference(self) -> str:
        if self.origin is None or not self.origin.file:
            return ""
        return f"{self.origin.file}:{self.line or self.origin.line}"

    def __str__(self) -> str:
        where = ""
        if self.origin is not None:
            reference = f" {self.reference}" if self.reference else ""
            where = f" ({self.origin.friendly_name}{reference})"
        return f"{self.type.level} [{self.type.code}]{where} {self.text}"

    def to_dict(self) -> dict[str, Any]:
        """istioctl analyze -o json's fields."""
        out: dict[str, Any] = {"code": self.type.code, "level": self.type.level, "message": self.text}
        if self.origin is not None:
            out["origin"] = self.origin.friendly_name
            if self.reference:
                out["reference"] = self.reference
        out["documentationUrl"] = f"{DOCS_URL}/{self.type.code.lower()}/?ref=pilot-analyze"
        return out

    def sort_key(self) -> tuple[int, str, str, str]:
        comparator = f"{self.origin.kind}/{self.origin.namespace}/{self.origin.name}" if self.origin else ""
        return LEVEL_ORDER[self.type.level], self.type.code, comparator, str(self)


def sorted_unique(messages: list[Message]) -> list[Message]:
    """istioctl's SortedDedupedCopy: level, code, object, text; identical lines once."""
    out: list[Message] = []
    for message in sorted(messages, key=Message.sort_key):
        if not out or str(out[-1]) != str(message):
            out.append(message)
    return out
