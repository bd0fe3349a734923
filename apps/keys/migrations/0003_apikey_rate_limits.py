"""Per-key overrides of the REST/gRPC rate limits (issue 13); empty means the default."""

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('keys', '0002_revocation_is_final'),
    ]

    operations = [
        migrations.AddField(
            model_name='apikey',
            name='rate_limit_get',
            field=models.CharField(blank=True, help_text='Reads allowed per period, e.g. 6000/m. Empty: RATE_LIMIT_GET.', max_length=20, validators=[django.core.validators.RegexValidator('^[1-9][0-9]{0,8}/(?:[1-9][0-9]{0,4})?[smhd]$', 'A rate is a count per period, e.g. 600/m, 6000/h or 100/10s.', code='invalid_rate')]),
        ),
        migrations.AddField(
            model_name='apikey',
            name='rate_limit_mutation',
            field=models.CharField(blank=True, help_text='Writes allowed per period, e.g. 600/m. Empty: RATE_LIMIT_MUTATION.', max_length=20, validators=[django.core.validators.RegexValidator('^[1-9][0-9]{0,8}/(?:[1-9][0-9]{0,4})?[smhd]$', 'A rate is a count per period, e.g. 600/m, 6000/h or 100/10s.', code='invalid_rate')]),
        ),
    ]
