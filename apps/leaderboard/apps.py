from django.apps import AppConfig


class LeaderboardConfig(AppConfig):
    name = "apps.leaderboard"
    default_auto_field = "django.db.models.BigAutoField"
