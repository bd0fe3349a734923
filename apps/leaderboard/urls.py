from django.urls import path

from apps.leaderboard import views

app_name = "leaderboard"

urlpatterns = [
    path("", views.models_page, name="models"),
    path("prompts/", views.prompts_page, name="prompts"),
    path("suites/", views.suites_page, name="suites"),
    path("models/<path:name>/", views.model_page, name="model"),
    path("prompts/<int:project_id>/<path:name>/", views.prompt_page, name="prompt"),
    path("suites/<path:name>/", views.suite_page, name="suite"),
]
