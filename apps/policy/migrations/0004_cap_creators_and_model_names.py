"""Caps record who created them; model names must match as a whole string.

Caps: `created_by_key` (an agent's key: that agent may later loosen or delete the cap) or
`created_by_user` (a staff user). Existing caps are attributed from their `cap.create` audit
row where it names a key or a user that still exists; the rest stay unattributed, which is
the safe side: only operators may loosen those.

Model names:
The old validator ended in `$`, which in Python also matches before a final newline, so
`"gpt-4o\n"` passed as a price, a cap's model filter or an allowed model. The validators now
anchor with \\A and \\Z, and CHECK constraints (using the same pattern, which PostgreSQL reads
the same way) refuse such names even from code that skips validation.

Rows written under the old validator lose their one trailing newline first: that is the name
whoever wrote them meant (a cap on "gpt-4o\n" counted nothing, an allow list of "gpt-4o\n"
allowed nothing that could ever be admitted). If a repaired price collides with an existing
price of the same model and instant, the UPDATE fails on `modelprice_unique_from` and the
migration stops; delete the duplicate by hand and migrate again.

The three tables are small (operator-written), so ADD CONSTRAINT's validating scan is brief.
"""

import django.contrib.postgres.fields
import django.core.validators
import django.db.models.deletion
import django.db.models.lookups
from django.conf import settings
from django.db import migrations, models

MODEL_NAME_RE = "\\A[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}\\Z"
MODEL_NAME_LIST_RE = "\\A[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}(?: [A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127})*\\Z"
MESSAGE = "Model names are 1-128 letters, digits or . _ : / @ + -, starting with a letter or digit."


def validator():
    return django.core.validators.RegexValidator(MODEL_NAME_RE, MESSAGE, code="invalid_model")


STRIP_TRAILING_NEWLINES = r"""
UPDATE policy_modelprice SET model = left(model, -1) WHERE right(model, 1) = E'\n';
UPDATE policy_policycap SET model = left(model, -1) WHERE right(model, 1) = E'\n';
UPDATE policy_policy SET allowed_models = ARRAY(
    SELECT CASE WHEN right(m, 1) = E'\n' THEN left(m, -1) ELSE m END
      FROM unnest(allowed_models) WITH ORDINALITY AS t(m, n) ORDER BY n)
 WHERE EXISTS (SELECT 1 FROM unnest(allowed_models) m WHERE right(m, 1) = E'\n');
"""


ATTRIBUTE_EXISTING_CAPS = """
UPDATE policy_policycap c SET created_by_key_id = k.id
  FROM audit_auditevent a JOIN keys_apikey k ON k.key_id = a.actor_key_id
 WHERE a.action = 'cap.create' AND a.target_type = 'policy.policycap' AND a.target_id = c.id::text
   AND a.actor_type = 'key';
UPDATE policy_policycap c SET created_by_user_id = a.actor_user_id
  FROM audit_auditevent a
 WHERE a.action = 'cap.create' AND a.target_type = 'policy.policycap' AND a.target_id = c.id::text
   AND a.actor_type = 'user' AND EXISTS (SELECT 1 FROM auth_user u WHERE u.id = a.actor_user_id);
"""


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0001_initial'),
        ('keys', '0002_revocation_is_final'),
        ('policy', '0002_policy_reserve_function'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='policycap',
            name='created_by_key',
            field=models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='keys.apikey'),
        ),
        migrations.AddField(
            model_name='policycap',
            name='created_by_user',
            field=models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        # Reversing drops the columns, so there is nothing to undo here.
        migrations.RunSQL(ATTRIBUTE_EXISTING_CAPS, reverse_sql=migrations.RunSQL.noop),
        # The repaired names were already valid under the old rule, so there is nothing to undo.
        migrations.RunSQL(STRIP_TRAILING_NEWLINES, reverse_sql=migrations.RunSQL.noop),
        migrations.AlterField(
            model_name='modelprice',
            name='model',
            field=models.CharField(max_length=128, validators=[validator()]),
        ),
        migrations.AlterField(
            model_name='policy',
            name='allowed_models',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=128, validators=[validator()]), blank=True, default=list, help_text='Empty: any model.', size=None),
        ),
        migrations.AlterField(
            model_name='policycap',
            name='model',
            field=models.CharField(blank=True, help_text='Only count this model. Empty: every model.', max_length=128, validators=[validator()]),
        ),
        migrations.AddConstraint(
            model_name='modelprice',
            constraint=models.CheckConstraint(condition=models.Q(('model__regex', MODEL_NAME_RE)), name='modelprice_model_name_valid'),
        ),
        migrations.AddConstraint(
            model_name='policy',
            constraint=models.CheckConstraint(condition=models.Q(('allowed_models', []), django.db.models.lookups.Regex(models.Func(models.F('allowed_models'), models.Value(' '), models.Value('*'), function='array_to_string', output_field=models.TextField()), models.Value(MODEL_NAME_LIST_RE)), _connector='OR'), name='policy_allowed_models_valid'),
        ),
        migrations.AddConstraint(
            model_name='policycap',
            constraint=models.CheckConstraint(condition=models.Q(('model', ''), ('model__regex', MODEL_NAME_RE), _connector='OR'), name='policycap_model_name_valid'),
        ),
    ]
