from django.contrib import admin

from apps.audit.models import AuditEvent
from modeloman.admin_actions import ReadOnlyModelAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    """The audit trail is written by services, in the transaction of each change."""

    list_display = ("created_at", "actor_label", "action", "target_type", "target_repr", "client_ip",
                    "request_id")
    list_filter = ("action", "actor_type", "target_type")
    search_fields = ("actor_label", "target_repr", "target_id", "request_id", "actor_key_id")
    date_hierarchy = "created_at"
