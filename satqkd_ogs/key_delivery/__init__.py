"""Key delivery to applications: the ETSI GS QKD 014 API of a station's key management entity."""

from satqkd_ogs.key_delivery.app import create_app
from satqkd_ogs.key_delivery.service import DeliverySettings, KeyDelivery
from satqkd_ogs.key_delivery.tls_server import KmeServer, server_config

__all__ = ["DeliverySettings", "KeyDelivery", "KmeServer", "create_app", "server_config"]
